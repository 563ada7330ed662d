#!/usr/bin/env python3
"""Random adversarial traffic for tests/spec_model/check.py: `gen.py SEED [N] > events.jsonl`.

A few users, each usually enrolled and in the audience at the start, then bursts, hourly
traffic, idle gaps of days, events late by minutes to twelve days (past the seven-day late
horizon of cap usage), re-sent duplicates (same id, moved times, other users), offset times, external scores near the 64-bit limits, deletions and unknown types. The same
seed always gives the same events (Python 3.11 standard library only).
"""
import sys, json, random
from datetime import datetime, timezone

BASE = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp() * 1000)
MIN = 60000
H = 3600000
D = 86400000
LIMIT = int(datetime(2026, 10, 20, tzinfo=timezone.utc).timestamp() * 1000)


def fmt(ms, rnd):
    # RFC 3339 only: SPEC 2 makes a number the wrong type (epoch milliseconds were sent here
    # until 2026-12-07, when leadscore still read them).
    sec, rem = divmod(ms, 1000)
    s = datetime.fromtimestamp(sec, tz=timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')
    if rem:
        s += '.%03d' % rem
    if rnd.random() < 0.05:
        # same instant with an offset
        dt = datetime.fromtimestamp(sec + 3600, tz=timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')
        return dt + ('.%03d' % rem if rem else '') + '+01:00'
    return s + 'Z'


NAMES = ['registered', 'webinar_joined', 'demo_requested', 'pricing_viewed', 'email_unsubscribed',
         'report_exported', 'signup_other']
ATTRS = {
    'is_employee': [True, False, None],
    'lifecycle_stage': ['lead', 'lead', 'trial', 'customer', None],
    'plan': ['free', 'pro', 'pro', None],
    'company_size': [5, 50, 50, 11, 10.5, '100', None],
    'email_bounced': [True],
    'lead_status': ['Open', 'MQL', 'disqualified', None],
    'sf_id': ['00Q1', '00Q2'],
    'email': [None, 'z@z.com'],
    'big': [2**53 + 1, float(2**53), 2**53, 2**63 - 1, float(2**63), None],
}
# Numbers that f64 rounding would confuse: equals/in/not_in compare them exactly.
EXACT = [2**53 + 1, 2**53, float(2**53), 2**63 - 1, float(2**63), -2**63, 1, 1.0, '1']


def horizon_block(rnd, sent, t, eid):
    """The one case where cap usage is forgotten (docs/semantics.md, "How long cap usage is
    kept"): an old scoring-type event x, the same kind of event now (its group, meeting a capped
    event, may drop x's window), a late external score dated before x's window (it moves the
    re-entry start back), then the same kind of event again in x's window, now late. Whether
    the late one finds x's usage depends on exactly when the window was dropped."""
    olds = [x for x in sent if x['type'] in ('session_start', 'custom_event') and x['_t'] < t - 2 * H]
    far = [x for x in olds if x['_t'] < t - 8 * D]
    if far and rnd.random() < 0.5:
        olds = far
    if not olds:
        return []
    x = rnd.choice(olds)
    body = {k: v for k, v in x.items() if k not in ('_t', 'time', 'event_id')}
    xt = x['_t']
    ext = {'user_id': x['user_id'], 'type': 'external_score',
           'time': fmt(xt - rnd.choice([1, 3, 25, 49]) * H - rnd.randint(0, 59) * MIN, rnd)}
    if rnd.random() < 0.5:
        ext['score'] = rnd.choice([0, 3, 10, 25, 40, -5])
    else:
        ext['increment'] = rnd.choice([-10, -1, 1, 5, 20])
    block = [dict(body, time=fmt(t, rnd)), ext]
    for _ in range(rnd.randint(1, 3)):
        block.append(dict(body, time=fmt(xt + rnd.randint(0, 10) * MIN, rnd)))
    for i, e in enumerate(block):
        if rnd.random() < 0.9:
            e['event_id'] = 'h%d' % (eid + i + 1)
    return block


def gen(seed, n=None):
    rnd = random.Random(seed)
    BIGS = [] if rnd.random() < 0.6 else [10**12, -10**12, 2**63-1, -2**63, 2**62, 123456789012345, -987654321987, 10**9+7]
    n = n or rnd.randint(5, 60)
    users = ['u%d' % i for i in range(1, rnd.randint(1, 4) + 1)]
    t = BASE + rnd.randint(0, 30) * D + rnd.randint(0, D)
    evs = []
    sent = []
    eid = 0
    style = rnd.choice(['normal', 'burst', 'hourly', 'grid', 'grid'])
    if style == 'grid':
        t = t // (30 * MIN) * (30 * MIN)
    for u in users:
        if rnd.random() < 0.75:
            for nm, v in [('plan', 'pro'), ('company_size', 50), ('lifecycle_stage', 'lead')]:
                eid += 1
                evs.append({'user_id': u, 'time': fmt(t, rnd), 'event_id': 'p%d' % eid, 'type': 'attribute_changed', 'name': nm, 'value': v})
            eid += 1
            evs.append({'user_id': u, 'time': fmt(t, rnd), 'event_id': 'p%d' % eid, 'type': rnd.choice(['email_added', 'custom_event']), 'name': 'registered', 'value': 'a@x.com'})
            t += rnd.randint(0, 5) * MIN
    eid = 0
    for _ in range(n):
        r = rnd.random()
        # time step
        s = rnd.random()
        if style == 'burst' and s < 0.85:
            t += rnd.randint(0, 10) * MIN
        elif style == 'hourly' and s < 0.85:
            t += rnd.randint(20, 120) * MIN
        elif s < 0.45:
            t += rnd.randint(0, 40) * MIN
        elif s < 0.6:
            t += rnd.randint(1, 12) * H
        elif s < 0.72:
            t += rnd.randint(1, 20) * D + rnd.randint(0, D)  # idle gap
        elif s < 0.8:
            t += rnd.choice([0, 1000, 250])
        if style == 'grid':
            t = t // (5 * MIN) * (5 * MIN) if rnd.random() < 0.3 else t // (30 * MIN) * (30 * MIN)
        t = min(t, LIMIT)
        et = t
        if rnd.random() < 0.15:
            et = t - rnd.choice([rnd.randint(1, 60) * MIN, rnd.randint(1, 30) * H, rnd.randint(1, 5) * D,
                                 rnd.randint(6, 12) * D + rnd.randint(0, D)])
        # duplicate re-send
        if sent and rnd.random() < 0.15:
            old = dict(rnd.choice(sent))
            k = rnd.random()
            if k < 0.3:
                pass  # exact copy
            elif k < 0.6:
                old['time'] = fmt(old['_t'] + rnd.choice([MIN, 30 * MIN, 3 * H, 7 * H, 25 * H, 50 * H, -H]), rnd)
            else:
                old['time'] = fmt(et, rnd)
            if rnd.random() < 0.2:
                old['user_id'] = rnd.choice(users)  # same event_id, another user
            evs.append({k2: v for k2, v in old.items() if k2 != '_t'})
            continue
        if rnd.random() < 0.08:
            block = horizon_block(rnd, sent, t, eid)
            if block:
                eid += len(block)
                evs.extend(block)
                continue
        u = rnd.choice(users)
        ev = {'user_id': u, 'time': None}
        if rnd.random() < 0.12 and sent:
            # late retry of a late event: re-send a recent late event with identical content
            lates = [x for x in sent[-6:] if x['_t'] < t - 30 * MIN]
            if lates:
                old = rnd.choice(lates)
                evs.append({k2: v for k2, v in old.items() if k2 != '_t'})
                continue
        if rnd.random() < 0.85:
            eid += 1
            ev['event_id'] = 'e%d' % eid
        if r < 0.2:
            ev['type'] = 'session_start'
            a = rnd.choice([None, 'app-web', 'app-desktop', 'www'])
            if a:
                ev['app_id'] = a
        elif r < 0.55:
            ev['type'] = 'custom_event'
            ev['name'] = rnd.choice(NAMES)
            if rnd.random() < 0.6:
                props = {}
                if rnd.random() < 0.5:
                    props['plan'] = rnd.choice(['pro', 'enterprise', 'free', 1])
                if rnd.random() < 0.5:
                    props['seats'] = rnd.choice([1, 5, 10, 4.5, '10'])
                if rnd.random() < 0.3:
                    props['live'] = rnd.choice([True, False, 'false'])
                if rnd.random() < 0.3:
                    props['n'] = rnd.choice(EXACT)
                ev['properties'] = props
        elif r < 0.62:
            ev['type'] = 'email_added'
            ev['value'] = rnd.choice(['a@x.com', 'b@y.org'])
        elif r < 0.82:
            ev['type'] = 'attribute_changed'
            nm = rnd.choice(list(ATTRS) + ['plan', 'company_size', 'lifecycle_stage'] * 2)
            ev['name'] = nm
            ev['value'] = rnd.choice(ATTRS[nm])
        elif r < 0.93:
            ev['type'] = 'external_score'
            if rnd.random() < 0.5:
                ev['score'] = rnd.choice([0, 3, 10, 25, 40, 80, -5] + BIGS)
            else:
                ev['increment'] = rnd.choice([-10, -1, 1, 5, 20] + BIGS)
            if rnd.random() < 0.6:
                ev['updated_at'] = fmt(et + rnd.choice([-D, -H, 0, H, 2 * D]), rnd)
        elif r < 0.97:
            ev['type'] = 'user_deleted'
        else:
            ev['type'] = 'page_viewed'
        ev['time'] = fmt(et, rnd)
        ev['_t'] = et
        sent.append(ev)
        evs.append({k2: v for k2, v in ev.items() if k2 != '_t'})
    return evs


if __name__ == '__main__':
    seed = int(sys.argv[1])
    for e in gen(seed, int(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(json.dumps(e))
