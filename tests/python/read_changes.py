"""Reads leadscore's score changes with aiokafka, a Kafka client leadscore does not use, as a
Python user would, and checks each one against the published contract (docs/formats.md):

- the value decodes: JSON with the standard library, or protobuf with the official `protobuf`
  runtime and classes that `grpcio-tools` (protoc) generates from proto/ at run time;
- a protobuf change, read field by field as docs/formats.md says, becomes the JSON form;
- the JSON form validates against schemas/score-change.schema.json (draft 2020-12);
- the key is the user ID, the `content-type` header names the format (and for protobuf the
  message protoc declares), the record timestamp is the change's `time`.

Prints one JSON summary on stdout for tests/python_client.rs to check; exits 0 unless it
could not read at all. Usage:

  read_changes.py --bootstrap HOST:PORT --topic TOPIC --format json|protobuf
                  --schema schemas/score-change.schema.json --proto proto [--timeout 60]
"""

import argparse
import asyncio
import datetime
import importlib
import json
import sys
import tempfile

from aiokafka import AIOKafkaConsumer, TopicPartition
from jsonschema import Draft202012Validator

# At most this many failures are reported in full: the counts say the rest.
MAX_REPORTED = 10


def rfc3339(millis):
    """Epoch milliseconds as leadscore writes them: UTC, Z, 0 or 3 fraction digits."""
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        milliseconds=millis
    )
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if millis % 1000:
        text += ".%03d" % (millis % 1000)
    return text + "Z"


def millis_of(text):
    """The epoch milliseconds of a `time` in the form leadscore writes."""
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = t - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def compile_protos(proto_dir):
    """Generates Python classes from proto/ with protoc (grpcio-tools), as a user would."""
    from grpc_tools import protoc
    import grpc_tools
    import os

    out = tempfile.mkdtemp(prefix="leadscore-pb2-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [
        os.path.join(proto_dir, "leadscore", "v1", name)
        for name in ("event.proto", "score_change.proto")
    ]
    rc = protoc.main(["protoc", "-I" + proto_dir, "-I" + include, "--python_out=" + out] + files)
    if rc != 0:
        raise SystemExit("protoc failed on %s (exit %d)" % (proto_dir, rc))
    sys.path.insert(0, out)
    return importlib.import_module("leadscore.v1.score_change_pb2")


def proto_as_json(pb2, message):
    """A protobuf ScoreChange in its JSON form, field by field as docs/formats.md maps them."""
    reason = {
        "kind": pb2.ReasonKind.Name(message.reason.kind)
        .removeprefix("REASON_KIND_")
        .lower()
    }
    if message.reason.HasField("group"):
        reason["group"] = message.reason.group
    if message.reason.HasField("event_id"):
        reason["event_id"] = message.reason.event_id
    attributes = {}
    for name, scalar in message.attributes.items():
        kind = scalar.WhichOneof("kind")
        if kind is None:
            raise ValueError("attribute %r has no value" % name)
        attributes[name] = getattr(scalar, kind)
    out = {
        "event_id": message.event_id,
        "user_id": message.user_id,
        "time": rfc3339(message.time.ToMilliseconds()),
        "previous_score": message.previous_score,
        "score": message.score,
        "delta": message.delta,
        "reason": reason,
        "attributes": attributes,
    }
    if message.windows:
        out["windows"] = message.windows
    return out


async def read_all(bootstrap, topic, timeout):
    """Every record of `topic` from the start to the end offsets it has now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            raise SystemExit("topic %s has no partitions (or does not exist)" % topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await caught_up(consumer, tps, end):
            if loop.time() > deadline:
                raise SystemExit("timed out reading %s: read %d records" % (topic, len(records)))
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


async def caught_up(consumer, tps, end):
    """Whether every partition's position has reached its end offset."""
    for tp in tps:
        if await consumer.position(tp) < end[tp]:
            return False
    return True


def check(records, fmt, pb2, validator):
    expected_type = "application/json"
    if fmt == "protobuf":
        expected_type = "application/x-protobuf; messageType=" + pb2.ScoreChange.DESCRIPTOR.full_name
    summary = {
        "records": len(records),
        "tombstones": 0,
        "decoded": 0,
        "valid": 0,
        "content_type_ok": 0,
        "key_ok": 0,
        "timestamp_ok": 0,
        "create_time": 0,
        "failures": [],
        "changes": [],
    }

    def fail(record, what):
        if len(summary["failures"]) < MAX_REPORTED:
            summary["failures"].append(
                "partition %d offset %d: %s" % (record.partition, record.offset, what)
            )

    for r in records:
        headers = dict(r.headers or ())
        content_type = headers.get("content-type", b"").decode("utf-8", "replace")
        if r.value is None:
            summary["tombstones"] += 1
            continue
        if content_type == expected_type:
            summary["content_type_ok"] += 1
        else:
            fail(r, "content-type %r, expected %r" % (content_type, expected_type))
        if r.timestamp_type == 0:
            summary["create_time"] += 1
        try:
            if fmt == "json":
                change = json.loads(r.value)
            else:
                change = proto_as_json(pb2, pb2.ScoreChange.FromString(r.value))
        except Exception as e:  # noqa: BLE001 - any failure to decode is a finding
            fail(r, "does not decode: %s" % e)
            continue
        summary["decoded"] += 1
        errors = sorted(validator.iter_errors(change), key=str)
        if errors:
            fail(r, "invalid: %s at %s" % (errors[0].message, list(errors[0].absolute_path)))
        else:
            summary["valid"] += 1
        if r.key is not None and r.key.decode("utf-8", "replace") == change.get("user_id"):
            summary["key_ok"] += 1
        else:
            fail(r, "key %r is not the user_id" % r.key)
        try:
            time = millis_of(change["time"])
        except (KeyError, TypeError, ValueError) as e:
            fail(r, "time unreadable: %s" % e)
        else:
            # The event time, or the produce time when the event time is ahead of it or not
            # after 1970 (docs/formats.md).
            if r.timestamp == time or (time > r.timestamp > 0) or time <= 0:
                summary["timestamp_ok"] += 1
            else:
                fail(r, "record timestamp %d, time %d" % (r.timestamp, time))
        summary["changes"].append(change)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--format", choices=["json", "protobuf"], required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--proto", required=True, help="the proto/ directory")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    with open(args.schema, encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    pb2 = compile_protos(args.proto)
    records = asyncio.run(read_all(args.bootstrap, args.topic, args.timeout))
    summary = check(records, args.format, pb2, validator)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
