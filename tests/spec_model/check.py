#!/usr/bin/env python3
"""Compare `leadscore simulate` with the independent model in model.py on random traffic.

    python3 check.py --leadscore PATH --cases N [--seed S]

For every rules file (rules/*.toml here, and the shipped examples/rules/seed-canvas.toml and
b2b-saas.toml), N cases of gen.py traffic are run through both, each in four modes: final
states, `--changes`, and both with `--now` past every event. A quarter of the cases run with
`--partitions 3` and a quarter with `--partitions 5` (changes then compared per user, in order).
Each failing case is one line naming the rules file, the seed, the partitions and the modes
that differ, with the first difference; its events are kept in a temporary directory (the line
names the file) and nothing is shrunk. Exit 1 on any mismatch, 0 otherwise. The same --seed
gives the same cases. Python 3.11 standard library only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

if sys.version_info < (3, 11):
    sys.exit('check.py needs Python 3.11 or newer (tomllib); this is %s' % sys.version.split()[0])

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import gen  # noqa: E402
import model  # noqa: E402

model.PRUNE = True  # the program bounds cap usage as docs/semantics.md says

EXAMPLES = os.path.normpath(os.path.join(HERE, '..', '..', 'examples', 'rules'))
RULES = sorted(os.path.join(HERE, 'rules', f) for f in os.listdir(os.path.join(HERE, 'rules'))
               if f.endswith('.toml')) + [os.path.join(EXAMPLES, 'seed-canvas.toml'),
                                          os.path.join(EXAMPLES, 'b2b-saas.toml')]
NOW = '2026-11-01T00:00:00Z'  # after every generated event (gen.LIMIT is 2026-10-20)
# One simulate run of at most a few hundred events takes milliseconds; a hang is a failure.
SIMULATE_TIMEOUT = 120
# (name, --changes, --now)
MODES = [('final', False, None), ('changes', True, None), ('changes+now', True, NOW),
         ('final+now', False, NOW)]


def partitions_of(i):
    return (1, 1, 3, 5)[i % 4]


def short(v, n=300):
    s = json.dumps(v, sort_keys=True, separators=(',', ':'))
    return s if len(s) <= n else s[:n] + '...'


def first_difference(got, exp):
    for i, (g, e) in enumerate(zip(got, exp)):
        if model.typed(g) != model.typed(e):
            return 'line %d: got %s expected %s' % (i + 1, short(g), short(e))
    if len(got) != len(exp):
        i = min(len(got), len(exp))
        return '%d lines, expected %d; first extra: %s' % (
            len(got), len(exp), short(got[i] if len(got) > i else exp[i]))
    return 'same'


def run_case(leadscore, rules, seed, parts, tmp):
    """Return None when the program and the model agree, else one line saying how not."""
    events = os.path.join(tmp, 'ev-%s-%d.jsonl' % (os.path.basename(rules), seed))
    with open(events, 'w') as f:
        for e in gen.gen(seed):
            f.write(json.dumps(e) + '\n')
    expected = {}
    failed = []
    for name, changes, now in MODES:
        if now not in expected:
            expected[now] = model.run(rules, events, now, parts)
        users, chs = expected[now]
        exp = chs if changes else users
        cmd = [leadscore, 'simulate', '--rules', rules, '--events', events,
               '--partitions', str(parts), '--max-future-skew', '4000000d']
        if changes:
            cmd.append('--changes')
        if now:
            cmd += ['--now', now]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=SIMULATE_TIMEOUT)
        except subprocess.TimeoutExpired:
            failed.append((name, 'no answer within %d s' % SIMULATE_TIMEOUT))
            continue
        if p.returncode != 0:
            failed.append((name, 'exit %s: %s' % (p.returncode, p.stderr.strip()[:300])))
            continue
        try:
            got = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
        except ValueError as e:
            failed.append((name, 'unparsable output: %s' % e))
            continue
        if parts > 1 and changes:
            # Partitions interleave as they like; within one user the order is fixed.
            got = sorted(got, key=lambda c: c['user_id'])
            exp = sorted(exp, key=lambda c: c['user_id'])
        if model.typed(got) != model.typed(exp):  # 1 and 1.0 differ
            failed.append((name, first_difference(got, exp)))
    if not failed:
        os.remove(events)
        return None
    return 'FAIL rules=%s seed=%d partitions=%d modes=%s events=%s: %s: %s' % (
        os.path.relpath(rules, HERE), seed, parts, ','.join(n for n, _ in failed), events,
        failed[0][0], failed[0][1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--leadscore', required=True, help='the leadscore binary')
    ap.add_argument('--cases', type=int, required=True, help='cases per rules file')
    ap.add_argument('--seed', type=int, default=0, help='first case seed is SEED * 1000000')
    ap.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                    help='cases run at once (the output does not depend on it)')
    a = ap.parse_args()
    if not os.access(a.leadscore, os.X_OK):
        sys.exit('check.py: %s is not an executable' % a.leadscore)
    tmp = tempfile.mkdtemp(prefix='spec_model-')
    jobs = [(rules, a.seed * 1000000 + i, partitions_of(i))
            for rules in RULES for i in range(a.cases)]
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        results = list(pool.map(lambda j: run_case(a.leadscore, j[0], j[1], j[2], tmp), jobs))
    fails = [r for r in results if r is not None]
    for line in fails:
        print(line)
    print('spec_model: %d cases per rules file x %d rules files (seeds %d..%d, 4 modes each, '
          'partitions 1/3/5): %d mismatching' % (a.cases, len(RULES), a.seed * 1000000,
                                                   a.seed * 1000000 + a.cases - 1, len(fails)))
    if fails:
        print('failing inputs kept in %s' % tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
