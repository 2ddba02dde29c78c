"""The instructors' grader: only the student's code earns points, each submission runs sandboxed, a class grades in
parallel (or as a slurm array), feedback carries no hidden test.

Modules, in the order a submission meets them: :mod:`~tools.grading.cli` (commands), :mod:`~tools.grading.parallel`
(the pool of workers and the single merger), :mod:`~tools.grading.slurm` (the same as a job array),
:mod:`~tools.grading.worker` (one submission in a scratch course), :mod:`~tools.grading.kernel` (nbgrader's kernels
in the sandbox), :mod:`~tools.grading.sandbox` (bubblewrap and the limits), :mod:`~tools.grading.merge` (into the
course gradebook), :mod:`~tools.grading.feedback` (what students get back). This package is instructor-only: it is
never part of the student distribution, and nothing of it is imported by the code it grades.
"""
