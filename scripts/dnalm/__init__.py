"""dnalm: the importable logic behind the dnalm-workflow Snakemake pipeline.

Rule scripts in ``scripts/`` are thin wrappers: they read ``snakemake.input``,
``snakemake.params`` and ``snakemake.output`` and call functions from this package.
Snakemake puts the folder of a rule script on ``sys.path``, so ``import dnalm`` works
inside any rule's environment; the tests put ``scripts/`` on the path through
``pyproject.toml``.
"""

__version__ = "0.1.0"
