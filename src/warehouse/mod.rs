//! `leadscore warehouse import|export`: the PostgreSQL warehouse sync.
