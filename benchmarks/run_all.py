"""Run every benchmark in turn and print their tables: ``python -m benchmarks.run_all`` (``make bench``)."""

from __future__ import annotations

from benchmarks import bench_infer, bench_loader, bench_train

if __name__ == "__main__":
    for bench in (bench_loader, bench_train, bench_infer):
        print(f"\n## {bench.__name__.split('.')[-1]}\n")
        bench.main([])
