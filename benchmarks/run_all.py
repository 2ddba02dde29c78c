"""Run every benchmark in turn and print their tables: ``python -m benchmarks.run_all`` (``make bench``).

The student's path (``bench_student``) comes last: it runs the seven notebooks on the default data set (about 8
minutes on two cores) and trains the reference model first when ``make reference`` has not made it yet.
"""

from __future__ import annotations

from benchmarks import bench_infer, bench_loader, bench_student, bench_train

if __name__ == "__main__":
    for bench in (bench_loader, bench_train, bench_infer, bench_student):
        print(f"\n## {bench.__name__.split('.')[-1]}\n")
        bench.main([])
