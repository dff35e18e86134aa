"""Static checks of the workflow: every rule has log/conda/threads/resources, env files exist
and pin exactly the versions requirements.txt pins, rule scripts exist and stay thin."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "rules").glob("*.smk"))
# Rules whose cost grows with the data (or that move it over the network): each needs a
# benchmark: file, so BENCHMARKS.md can be refreshed from results/benchmarks/.
HEAVY = {
    "download", "extract_member", "simulate_genome", "simulate_barcodes", "prepare_genome",
    "prepare_barcodes", "prepare_task", "plan_kmer_shards", "count_kmers", "merge_kmers",
    "count_barcode_kmers", "npmi_table", "genome_corpus", "barcode_corpus", "pretrain", "embed", "fewshot",
    "taxonomy", "clustering", "probing", "plot_embedding_map", "align_inputs", "align_chunk", "align_taxonomy",
    "init_model", "fetch_pretrained",
}


def rule_blocks():
    """(file, rule name, body) for every rule in rules/*.smk."""
    blocks = []
    for path in RULE_FILES:
        text = path.read_text()
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, flags=re.M):
            blocks.append((path, m.group(1), m.group(2)))
    return blocks


def directive(body, name):
    m = re.search(rf"^    {name}:\s*\n\s+(.+)$|^    {name}:\s*(.+)$", body, flags=re.M)
    if not m:
        return None
    return (m.group(1) or m.group(2)).strip().rstrip(",")


def pins(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==")
            out[name.strip().lower()] = version.strip()
    return out


REQ = pins(ROOT / "requirements.txt")
#: conda packages with no PyPI counterpart, pinned to the Debian version the tests use
CONDA_ONLY = {"vsearch": "2.22.1"}


def test_rules_found():
    names = [name for _, name, _ in rule_blocks()]
    assert len(names) >= 15 and len(set(names)) == len(names)
    assert HEAVY <= set(names), f"heavy rules not found (renamed?): {sorted(HEAVY - set(names))}"


@pytest.mark.parametrize("path,name,body", rule_blocks(), ids=[name for _, name, _ in rule_blocks()])
def test_rule_has_required_directives(path, name, body):
    for key in ("output", "log", "threads", "conda"):
        assert directive(body, key) is not None, f"{path.name}: rule {name} lacks {key}:"
    assert re.search(r"^    resources:", body, flags=re.M), f"rule {name} lacks resources:"
    if name in HEAVY:
        assert re.search(r"^    benchmark:", body, flags=re.M), f"heavy rule {name} lacks benchmark:"
    env = (path.parent / directive(body, "conda").strip("\"'")).resolve()
    assert env.exists(), f"rule {name}: conda env {env} does not exist"
    script = directive(body, "script")
    assert script, f"rule {name} should run a script"
    script_path = (path.parent / script.strip("\"'")).resolve()
    assert script_path.exists(), f"rule {name}: script {script_path} missing"
    lines = [ln for ln in script_path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(lines) < 45, f"rule script {script_path.name} is not thin ({len(lines)} lines); move logic to dnalm/"
    assert "snakemake.log[0]" in script_path.read_text(), f"{script_path.name} does not log to snakemake.log[0]"


@pytest.mark.parametrize("path,name,body", rule_blocks(), ids=[name for _, name, _ in rule_blocks()])
def test_log_and_benchmark_are_named_after_the_rule(path, name, body):
    """One scheme everywhere: logs/<rule>[/<wildcard>...].log and the same for benchmarks/
    (Snakemake itself checks that they hold the output's wildcards)."""
    log = directive(body, "log")
    m = re.fullmatch(rf'R\("logs/{name}((?:/\{{\w+\}})*)\.log"\)', log)
    assert m, f"{path.name}: rule {name} logs to {log}; expected R(\"logs/{name}[/{{wildcard}}...].log\")"
    benchmark = directive(body, "benchmark")
    if benchmark is not None:
        assert benchmark == f'R("benchmarks/{name}{m.group(1)}.tsv")', f"rule {name}: benchmark {benchmark}"


def test_workflow_files_are_found_relative_to_the_workflow():
    """Module reuse: nothing resolves the workflow's own files from the including workflow's
    folder (workflow.basedir); rules/common.smk uses workflow.current_basedir."""
    for path in [ROOT / "Snakefile", *RULE_FILES]:
        assert "workflow.basedir" not in path.read_text(), f"{path.name} uses workflow.basedir"
    assert "workflow.current_basedir" in (ROOT / "rules" / "common.smk").read_text()


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_files_pin_same_versions_as_requirements(env):
    spec = yaml.safe_load(env.read_text())
    assert spec["channels"] == ["conda-forge", "bioconda", "nodefaults"]
    pip_list = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip_list, env
    for line in pip_list:
        name, version = line.split("==")
        assert REQ.get(name.lower()) == version, f"{env.name}: {line} but requirements.txt pins {REQ.get(name.lower())}"
    for dep in spec["dependencies"]:
        if isinstance(dep, str) and "=" in dep and not dep.startswith("python"):
            name, version = dep.split("=", 1)
            pinned = CONDA_ONLY.get(name, REQ.get(name))
            assert pinned == version.lstrip("="), f"{env.name}: {dep} disagrees with requirements.txt"


def test_every_env_file_is_used():
    used = set()
    for path, _, body in rule_blocks():
        used.add((path.parent / directive(body, "conda").strip("\"'")).resolve())
    assert used == {p.resolve() for p in (ROOT / "envs").glob("*.yaml")}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    commands = [ln for ln in ci.splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]


def test_sysdeps_installs_the_others_when_one_package_is_unavailable(tmp_path):
    """tools/sysdeps.sh with a fake apt-get that cannot install `nosuchpkg` (as chromium on
    Ubuntu): the other packages still get installed, and the failing one is named."""
    import os
    import shutil
    import subprocess

    tools, bin_dir, state = tmp_path / "tools", tmp_path / "bin", tmp_path / "installed"
    tools.mkdir()
    bin_dir.mkdir()
    state.write_text("")
    shutil.copy(ROOT / "tools" / "sysdeps.sh", tools / "sysdeps.sh")
    (tools / "apt-packages.txt").write_text("# comment\nalpha beta\nnosuchpkg\ngamma  # trailing comment\n")
    (bin_dir / "apt-get").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        '[ "$1" = update ] && exit 0\n'
        'pkgs=(); for a in "$@"; do case $a in -*|install) ;; *) pkgs+=("$a");; esac; done\n'
        'for p in "${pkgs[@]}"; do [ "$p" = nosuchpkg ] && { echo "E: Unable to locate package $p"; exit 100; }; done\n'
        f'printf "%s\\n" "${{pkgs[@]}}" >> {state}\n'
    )
    (bin_dir / "dpkg-query").write_text(
        f'#!/usr/bin/env bash\ngrep -qx "${{@: -1}}" {state} && printf "install ok installed" || exit 1\n'
    )
    (bin_dir / "id").write_text("#!/usr/bin/env bash\necho 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SYSDEPS_LOG=str(tmp_path / "apt.log"))
    proc = subprocess.run(["bash", str(tools / "sysdeps.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(state.read_text().split()) == ["alpha", "beta", "gamma"]
    assert "could not install nosuchpkg (" in proc.stderr, proc.stderr
    assert "installed the others: alpha beta gamma" in proc.stderr, proc.stderr
    assert "Unable to locate package nosuchpkg" in (tmp_path / "apt.log").read_text()
    # all at once, update, all at once again, then one by one
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[1] == "update -qq" and sum("install" in c and "nosuchpkg" in c for c in calls) == 3
