#!/usr/bin/env python3
"""Independent model of leadscore's scoring semantics, for tests/spec_model/check.py.

Written from ../shared/SPEC.md section 3 and the decisions in docs/semantics.md and
docs/formats.md alone, without reading the engine's source, so that a misreading shared by the
engine and its own Rust reference model (crates/leadscore-engine/tests/reference_model.rs) can
still show up here. Python 3.11 standard library only.

What it emulates is what `leadscore simulate` prints: each user's final state, or with
`--changes` the score changes (JSON, keys as in docs/formats.md), with or without `--now`, with
`--partitions N` (Kafka's murmur2 partitioner, one partition clock each). Beyond SPEC 3 it
follows these documented decisions:

- rule order per event: clock, due timers (by due time, then user id), duplicates, attributes,
  enrollment, then external score or audience / re-entry / first matching group;
- `equals` / `in` / `not_in` compare an integer and a float exactly (no f64 rounding past
  2^53); `gt` / `gte` / `lt` / `lte` compare as 64-bit floats;
- a change's `delta` is `score - previous_score` saturated to the i64 range;
- event ids are remembered until the clock reaches `r + 2 * dedupe_window` (`r` the later of
  the event time and the clock when recorded, its distance from the event time rounded up to a
  multiple of 2^k, k = max(0, bit length - 9)), at most 4,096 per user, first recorded dropped
  first;
- cap usage (PRUNE = True, the default): a group's usage of a window is dropped, when the group
  next meets a capped event, only once the window ended at or before the re-entry start, more
  than one cap period before the partition clock, and more than 7 days before it; at most 192
  windows per group and user, earliest dropped first. PRUNE = False keeps all usage (SPEC 3.4
  read literally);
- collapsed inactivity decays (one change per clock advance, `windows` = windows covered),
  exact decimal factors truncating toward zero, change ids `<kind>:<user>@<ms>#<n>`.
"""
import sys, json, re, tomllib, argparse, collections


def round_late(late):
    """docs/semantics.md: how far the clock was past an id's event time when it was recorded,
    as kept: exact below 512 ms, else rounded up to a multiple of 2^(bit length - 9)."""
    k = max(0, late.bit_length() - 9)
    return -(-late >> k) << k
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

I64MAX = 2**63 - 1
I64MIN = -2**63
PRUNE = True  # emulate the documented bounds on cap usage (docs/semantics.md)
MAX_IDS = 4096  # event ids remembered per user
MAX_CAP_WINDOWS = 192  # cap windows kept per group and user (PRUNE mode)
LATE_HORIZON = 7 * 86400000  # cap usage is kept at least this long past its window's end

UNITS = {'ms': 1, 's': 1000, 'm': 60000, 'h': 3600000, 'd': 86400000}


def dur(s):
    tot = 0
    for n, u in re.findall(r'(\d+)(ms|s|m|h|d)', s):
        tot += int(n) * UNITS[u]
    return tot


TRE = re.compile(r'^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$')


def ptime(v):
    # SPEC 2: an RFC 3339 timestamp; gen.py writes no other form.
    m = TRE.match(v)
    y, mo, d, H, M, S = (int(x) for x in m.groups()[:6])
    frac = m.group(7)
    ms = int((frac[1:] + '000')[:3]) if frac else 0
    leap = S == 60
    if leap:
        S = 59
        ms = 999
    dt = datetime(y, mo, d, H, M, S, tzinfo=timezone.utc)
    off = m.group(8)
    offms = 0
    if off not in ('Z', 'z'):
        sign = 1 if off[0] == '+' else -1
        offms = sign * (int(off[1:3]) * 3600000 + int(off[4:6]) * 60000)
    return int(dt.timestamp()) * 1000 + ms - offms


def ftime(ms):
    if ms is None:
        return None
    if ms > 253402300799999:
        return None
    sec, rem = divmod(ms, 1000)
    dt = datetime.fromtimestamp(sec, tz=timezone.utc)
    s = dt.strftime('%Y-%m-%dT%H:%M:%S')
    if rem:
        s += '.%03d' % rem
    return s + 'Z'


def typed(v):
    """v with each number tagged by its kind, so that 1 and 1.0 differ (Python's == says equal):
    an attribute keeps its kind, and a tracked one changing 1.0 to 1 is a change (the published
    snapshot differs); only rules compare them as equal."""
    if isinstance(v, dict):
        return tuple(sorted((k, typed(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(typed(x) for x in v)
    return (type(v).__name__, v)


def isnum(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def veq(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isnum(a) and isnum(b):
        # exact compare
        try:
            return Fraction(a) == Fraction(b)
        except (ValueError, OverflowError):
            return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def pred(p, values, key):
    name = p[key]
    present = name in values
    v = values.get(name)
    if 'exists' in p:
        return present == p['exists']
    if 'not_in' in p:
        if not present:
            return True
        return not any(veq(v, x) for x in p['not_in'])
    if not present:
        return False
    if 'equals' in p:
        return veq(v, p['equals'])
    if 'in' in p:
        return any(veq(v, x) for x in p['in'])
    for op in ('gt', 'gte', 'lt', 'lte'):
        if op in p:
            if not isnum(v):
                return False
            a, b = float(v), float(p[op])
            return {'gt': a > b, 'gte': a >= b, 'lt': a < b, 'lte': a <= b}[op]
    raise ValueError(p)


def matches(m, ev):
    t = ev['type']
    if m['type'] != t:
        return False
    if 'name' in m:
        if t not in ('custom_event', 'attribute_changed'):
            return False
        if ev.get('name') != m['name']:
            return False
    if 'app_id' in m:
        if t != 'session_start':
            return False
        if ev.get('app_id') != m['app_id']:
            return False
    props = (ev.get('properties') or {}) if t == 'custom_event' else {}
    for p in m.get('properties', []):
        if not pred(p, props, 'property'):
            return False
    return True


KNOWN = {'session_start', 'custom_event', 'email_added', 'attribute_changed', 'external_score', 'user_deleted'}


def murmur2(data):
    length = len(data)
    seed = 0x9747b28c
    m = 0x5bd1e995
    r = 24
    h = (seed ^ length) & 0xffffffff
    l4 = length // 4
    for i in range(l4):
        i4 = i * 4
        k = (data[i4] & 0xff) + ((data[i4 + 1] & 0xff) << 8) + ((data[i4 + 2] & 0xff) << 16) + ((data[i4 + 3] & 0xff) << 24)
        k = (k * m) & 0xffffffff
        k ^= k >> r
        k = (k * m) & 0xffffffff
        h = (h * m) & 0xffffffff
        h ^= k
    rem = length % 4
    base = l4 * 4
    if rem == 3:
        h ^= (data[base + 2] & 0xff) << 16
    if rem >= 2:
        h ^= (data[base + 1] & 0xff) << 8
    if rem >= 1:
        h ^= data[base] & 0xff
        h = (h * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    h ^= h >> 15
    return h


def partition_of(uid, n):
    return (murmur2(uid.encode()) & 0x7fffffff) % n


STATS = collections.Counter()  # coverage counters, for tuning the generator


class User:
    def __init__(self):
        self.score = 0
        self.enrolled = False
        self.attrs = {}
        self.last_change = None
        self.ext_updated = None
        self.ids = {}  # id -> (t0, r) insertion ordered
        self.caps = {}  # group -> {window_start: used}
        self.due = None
        self.n = 0


class Rules:
    def __init__(self, path):
        with open(path, 'rb') as f:
            raw = f.read()
        d = tomllib.loads(raw.decode())
        self.dedupe = dur(d.get('dedupe_window', '24h'))
        sc = d.get('score', {})
        self.min = sc.get('min')
        self.max = sc.get('max')
        en = d.get('entry', {})
        self.entry = en.get('on', [{'type': 'email_added'}, {'type': 'external_score'}])
        self.reentry = dur(en.get('reentry_window', '0s'))
        au = d.get('audience', {})
        self.include = au.get('include', [])
        self.exclude = au.get('exclude', [])
        self.groups = []
        for g in d.get('group', []):
            cap = g.get('cap')
            self.groups.append((g['name'], g['delta'], g['triggers'],
                                (cap['points'], dur(cap['per'])) if cap else None))
        ina = d.get('inactivity')
        self.window = None
        if ina:
            self.window = dur(ina['window'])
            self.idelta = ina.get('delta')
            self.factor = None
            if 'factor' in ina:
                # recover decimal text from the TOML source
                mm = re.search(rb'factor\s*=\s*([0-9eE.+-]+)', raw)
                self.factor = Fraction(Decimal(mm.group(1).decode()))
        self.tracked = d.get('output', {}).get('tracked_attributes', ['lead_status'])

    def clamp(self, v):
        if self.min is not None and v < self.min:
            v = self.min
        if self.max is not None and v > self.max:
            v = self.max
        return max(I64MIN, min(I64MAX, v))

    def audience(self, attrs):
        return all(pred(p, attrs, 'attribute') for p in self.include) and \
            not any(pred(p, attrs, 'attribute') for p in self.exclude)


class Partition:
    def __init__(self, rules, out):
        self.R = rules
        self.users = {}
        self.clock = None
        self.out = out
        self.offset = 0

    def snapshot(self, u):
        return {k: u.attrs[k] for k in sorted(self.R.tracked) if k in u.attrs}

    def emit(self, uid, u, kind, t, prev, group=None, src=None, windows=None):
        u.n += windows if windows else 1
        dl = u.score - prev
        if not (I64MIN <= dl <= I64MAX):
            STATS['delta_overflow'] += 1
            dl = max(I64MIN, min(I64MAX, dl))  # saturated, keeping its sign
        ch = {'attributes': self.snapshot(u), 'delta': dl,
              'event_id': '%s:%s@%d#%d' % (kind, uid, t, u.n % 2**32),
              'previous_score': prev, 'reason': {'kind': kind}, 'score': u.score,
              'time': ftime(t), 'user_id': uid}
        if group is not None:
            ch['reason']['group'] = group
        if src is not None:
            ch['reason']['event_id'] = src
        if windows is not None:
            # A uint32 on the output: more windows than that say its maximum (docs/formats.md).
            ch['windows'] = min(windows, 2**32 - 1)
        self.out.append(ch)

    def score_changed(self, u, t):
        u.last_change = t
        if self.R.window is not None:
            u.due = t + self.R.window

    def fire_timers(self):
        R = self.R
        if R.window is None:
            return
        due = sorted(((u.due, uid) for uid, u in self.users.items() if u.due is not None and u.due <= self.clock))
        for _, uid in due:
            u = self.users[uid]
            prev = u.score
            wins = 0
            last_t = None
            while u.due is not None and u.due <= self.clock:
                T = u.due
                if not u.enrolled or not R.audience(u.attrs):
                    u.due = None
                    break
                if R.factor is None:
                    k = (self.clock - T) // R.window + 1
                    lo = R.min if R.min is not None else I64MIN
                    hi = R.max if R.max is not None else I64MAX
                    if R.idelta < 0:
                        if u.score <= lo:
                            u.due = None
                            break
                        need = -(-(u.score - lo) // (-R.idelta))
                    else:
                        if u.score >= hi:
                            u.due = None
                            break
                        need = -(-(hi - u.score) // R.idelta)
                    steps = min(k, need)
                    u.score = R.clamp(u.score + steps * R.idelta)
                    last_t = T + (steps - 1) * R.window
                    wins += steps
                    u.last_change = last_t
                    u.due = last_t + R.window
                    continue
                if R.factor is not None:
                    p, q = R.factor.numerator, R.factor.denominator
                    new = (u.score * p) // q if u.score >= 0 else -((-u.score * p) // q)
                else:
                    new = u.score + R.idelta
                new = R.clamp(new)
                if new == u.score:
                    u.due = None
                    break
                u.score = new
                u.last_change = T
                u.due = T + R.window
                wins += 1
                last_t = T
            if wins:
                self.emit(uid, u, 'inactivity', last_t, prev, windows=wins)

    def advance(self, t):
        self.clock = t if self.clock is None else max(self.clock, t)
        self.fire_timers()

    def event(self, ev, src_id):
        R = self.R
        t = ptime(ev['time'])
        self.advance(t)
        typ = ev['type']
        uid = ev['user_id']
        if typ not in KNOWN:
            return
        if typ == 'user_deleted':
            self.users.pop(uid, None)
            return
        u = self.users.get(uid)
        if u is None:
            u = self.users[uid] = User()
        eid = ev.get('event_id')
        if eid is not None:
            # forget old ids
            for k in [k for k, (t0, r) in u.ids.items() if self.clock >= r + 2 * R.dedupe]:
                del u.ids[k]
                STATS['forgot'] += 1
            if eid in u.ids:
                t0, r = u.ids[eid]
                if t < t0 + R.dedupe:
                    STATS['dup'] += 1
                    if t0 + 2 * R.dedupe <= self.clock: STATS['late_dup_retry'] += 1
                    return  # duplicate
                else:
                    STATS['same_id_applied'] += 1
            u.ids.pop(eid, None)
            u.ids[eid] = (t, t + round_late(max(t, self.clock) - t))
            while len(u.ids) > MAX_IDS:
                del u.ids[next(iter(u.ids))]
        before = self.snapshot(u)
        # attributes
        if typ == 'attribute_changed':
            if ev['value'] is None:
                u.attrs.pop(ev['name'], None)
            else:
                u.attrs[ev['name']] = ev['value']
        elif typ == 'email_added':
            u.attrs['email'] = ev['value']
        # enrollment
        if not u.enrolled and any(matches(m, ev) for m in R.entry):
            u.enrolled = True
        prev = u.score
        changed = False
        kind = group = None
        if typ == 'external_score':
            ua = ev.get('updated_at')
            ua = ptime(ua) if ua is not None else None
            if ua is not None and u.ext_updated is not None and ua < u.ext_updated:
                STATS['stale'] += 1
            else:
                u.ext_updated = ua
                if ev.get('score') is not None:
                    new = int(ev['score'])
                else:
                    new = u.score + int(ev['increment'])
                new = R.clamp(new)
                if new != u.score:
                    u.score = new
                    changed = True
                    kind = 'external'
        else:
            if not u.enrolled: STATS['b_notenrolled'] += 1
            elif not R.audience(u.attrs): STATS['b_audience'] += 1
            elif not (u.last_change is None or t >= u.last_change + R.reentry): STATS['b_reentry'] += 1
            if u.enrolled and R.audience(u.attrs) and \
                    (u.last_change is None or t >= u.last_change + R.reentry):
                for (gname, delta, trig, cap) in R.groups:
                    if any(matches(m, ev) for m in trig):
                        d = delta
                        if cap is not None:
                            pts, per = cap
                            ws = (t // per) * per
                            if PRUNE and gname in u.caps:
                                rs = u.last_change + R.reentry if u.last_change is not None else None
                                for w in list(u.caps[gname]):
                                    end = w + per
                                    if rs is not None and end <= rs and self.clock - end > per \
                                            and self.clock - end > LATE_HORIZON:
                                        del u.caps[gname][w]
                                        STATS['cap_pruned'] += 1
                            used = u.caps.get(gname, {}).get(ws, 0)
                            left = max(0, pts - used)
                            d = max(-left, min(left, d))
                            if d != delta: STATS['capcut'] += 1
                        if d != 0:
                            new = R.clamp(u.score + d)
                            if new != u.score:
                                applied = new - u.score
                                u.score = new
                                changed = True
                                kind = 'rule'
                                group = gname
                                if cap is not None:
                                    u.caps.setdefault(gname, {})
                                    u.caps[gname][ws] = u.caps[gname].get(ws, 0) + abs(applied)
                                    while PRUNE and len(u.caps[gname]) > MAX_CAP_WINDOWS:
                                        del u.caps[gname][min(u.caps[gname])]
                        break
        if changed:
            self.score_changed(u, t)
            self.emit(uid, u, kind, t, prev, group=group, src=src_id)
        elif typed(self.snapshot(u)) != typed(before):
            self.emit(uid, u, 'attribute', t, prev, src=src_id)


def run(rules_path, events_path, now=None, partitions=1):
    R = Rules(rules_path)
    out = []
    parts = [Partition(R, out) for _ in range(partitions)]
    with open(events_path) as f:
        lines = f.read().split('\n')
    for idx, line in enumerate(lines):
        if not line.strip():
            continue
        ev = json.loads(line)
        pi = partition_of(ev['user_id'], partitions)
        p = parts[pi]
        if partitions == 1:
            src = ev.get('event_id') or 'simulate/0/%d' % idx
        else:
            src = ev.get('event_id') or 'simulate/%d/%d' % (pi, p.offset)
        p.offset += 1
        p.event(ev, src)
    for p in parts:
        if now is not None:
            p.advance(ptime(now))
        elif p.clock is not None:
            p.fire_timers()
    users = []
    for p in parts:
        for uid, u in p.users.items():
            users.append({'attributes': dict(sorted(u.attrs.items())), 'enrolled': u.enrolled,
                          'inactivity_due': ftime(u.due), 'last_change': ftime(u.last_change),
                          'score': u.score, 'user_id': uid})
    users.sort(key=lambda x: x['user_id'].encode())
    return users, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('cmd')
    ap.add_argument('--rules', required=True)
    ap.add_argument('--events', required=True)
    ap.add_argument('--now')
    ap.add_argument('--changes', action='store_true')
    ap.add_argument('--partitions', type=int, default=1)
    a = ap.parse_args()
    users, changes = run(a.rules, a.events, a.now, a.partitions)
    for o in (changes if a.changes else users):
        print(json.dumps(o, sort_keys=True, separators=(',', ':'), ensure_ascii=False))


if __name__ == '__main__':
    main()
