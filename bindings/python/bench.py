"""1,000-record bulk write and read through the Python package; prints the
per-iteration seconds as JSON. Run by `chittysync-bench --only bindings`,
which times the same work in Rust in the same run."""

import argparse
import json
import os
import tempfile
import time

import chittysync as cs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    write, read = [], []
    for i in range(args.warmup + args.iterations):
        with tempfile.TemporaryDirectory() as d:
            reg = cs.Replica(os.path.join(d, "bench.db")).create_registry(
                "bench", [cs.field("name", "text", required=True), cs.field("tier", "integer")]
            )
            rows = [{"name": f"service-{n}", "tier": n % 3 + 1} for n in range(args.records)]
            t = time.perf_counter()
            reg.put_many(rows)
            w = time.perf_counter() - t
            t = time.perf_counter()
            got = reg.list()
            r = time.perf_counter() - t
            assert len(got) == args.records and got[0]["name"].startswith("service-")
            if i >= args.warmup:
                write.append(w)
                read.append(r)
    print(json.dumps({"write": write, "read": read}))


if __name__ == "__main__":
    main()
