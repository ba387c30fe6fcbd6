"""The `orchestrate` command. A user's own mistake is one line and an exit code (2: the job file or an
argument, 1: a host or the run); ORCHESTRATE_DEBUG=1 shows the traceback. Imports stay light: no torch,
no timm, no matplotlib at start-up."""
from __future__ import annotations

import json
import os
import sys
import threading
from typing import Optional

import click

from .console import Console, Masker
from .errors import OrchestrateError, UsageError

DEBUG = os.environ.get("ORCHESTRATE_DEBUG") == "1"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="orchestrate", prog_name="orchestrate")
def cli() -> None:
    """Run a distributed training job in containers on many hosts, from one YAML file."""


def _load(job: str):
    from .spec import load_job

    return load_job(job)


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print, per host, the docker commands `up` would run; start nothing.")
@click.option("--detach", "-d", is_flag=True, help="Return once every container runs; Ctrl-C only detaches.")
@click.option("--skip-preflight", is_flag=True, help="Skip the host checks (printed as a warning).")
def up(job: str, dry_run: bool, detach: bool, skip_preflight: bool) -> None:
    """Validate JOB, start one container per host, stream every node's output, wait, tear down."""
    from .launcher import Launcher, secret_values
    from .plan import make_plan, render_dry_run
    from .runs import new_run_id

    spec = _load(job)
    console = Console()
    if dry_run:
        secret_values(spec)  # fail now if a secret is missing, but never print it
        from .transport import resolve_master_addr

        plan = make_plan(spec, new_run_id(), master_addr=resolve_master_addr(spec))
        for w in plan.warnings:
            console.warn(w)
        click.echo(render_dry_run(plan), nl=False)
        return
    if skip_preflight:
        console.warn("--skip-preflight: hosts are not checked before starting")
    code = Launcher(spec, job, console, detach=detach, skip_preflight=skip_preflight).up()
    sys.exit(code)


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
def check(job: str) -> None:
    """Run the preflight checks of JOB on every host and print them as one table."""
    from . import preflight
    from .hosts import Hosts

    spec = _load(job)
    console = Console()
    hosts = Hosts.connect_all(spec)
    try:
        reports = preflight.run_checks(spec, hosts)
        console.table(preflight.render(reports))
        bad = [r.host for r in reports if not r.ok]
        if bad:
            console.error(f"preflight failed on {', '.join(bad)}")
            sys.exit(1)
    finally:
        hosts.close()


def _install_masker(spec) -> None:
    """Mask the job's secret values (taken from this shell's environment) in everything printed or saved."""
    names = list(spec.container.secret_env)
    Masker.install(os.environ[n] for n in names if os.environ.get(n))
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        Console().warn(f"{', '.join(missing)} (secret_env) not set in this shell: output that contains "
                       "those values cannot be masked")


def _spec_for(run_id: Optional[str], job: Optional[str]):
    """The spec of a run: from runs/<id>/run.json, or from the job file when runs/ is gone."""
    from .runs import resolve_run
    from .spec import JobSpec

    if job:
        if not run_id:
            raise UsageError("give the run id together with --job (see `orchestrate status --job JOB` for ids)")
        return run_id, _load(job), None
    rd = resolve_run(run_id)
    rec = rd.load()
    return rd.run_id, JobSpec.model_validate(rec["job"]["spec"]), rd


def _run_context(run_id: Optional[str], job: Optional[str]):
    """(run id, spec, RunDir) of a run to act on, with its secrets masked from here on."""
    from .runs import run_dir

    rid, spec, rd = _spec_for(run_id, job)
    _install_masker(spec)
    return rid, spec, rd or run_dir(rid)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--job", "-f", "job", help="Job file, to find hosts when runs/ has no record of the run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(run_id: Optional[str], job: Optional[str], as_json: bool) -> None:
    """Per-node state of a run, read from the hosts (container labels), not only from local files."""
    from . import docker_api
    from .fanout import fanout
    from .hosts import Hosts
    from .spec import JobSpec

    if job and not run_id:
        spec = _load(job)
        rid, rd = None, None
    else:
        rid, spec, rd = _spec_for(run_id, job)
    assert isinstance(spec, JobSpec)
    _install_masker(spec)
    rows = []
    if spec.runtime == "docker":
        hosts = Hosts.connect_all(spec)
        try:
            def one(h):
                return [(c.labels, c.status, c.attrs.get("State", {}).get("ExitCode"), c.name)
                        for c in docker_api.find_containers(hosts.docker(h), rid, spec.name)]
            results, failures = fanout([(h, h) for h in hosts.transports], one, "status", raise_errors=False)
        finally:
            hosts.close()
        for h, found in results.items():
            for labels, state, code, name in found:
                rows.append({"run_id": labels.get("orchestrate.run"), "rank": int(labels.get("orchestrate.rank", -1)),
                             "host": h, "container": name, "state": state,
                             "exit_code": code if state == "exited" else None})
        for h, err in failures.items():
            rows.append({"run_id": rid, "rank": None, "host": h, "container": None, "state": "unreachable",
                         "exit_code": None, "error": str(err)})
    rec = rd.load() if rd else None
    if rec and not any(r["state"] != "unreachable" for r in rows):
        for n in rec.get("nodes", []):
            rows.append({"run_id": rid, "rank": n["rank"], "host": n["host"], "container": n.get("container"),
                         "state": "removed", "exit_code": n.get("exit_code")})
    rows.sort(key=lambda r: (r["run_id"] or "", r["rank"] if r["rank"] is not None else -1))
    out = {"run_id": rid, "job": spec.name, "status": rec.get("status") if rec else None, "nodes": rows}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"run {rid or '(all runs of ' + spec.name + ')'}"
                  + (f": {rec.get('status')}" if rec else ""))
    for col in ("run", "node", "host", "container", "state", "exit"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(x) for x in (
            r["run_id"] or "", "" if r["rank"] is None else f"node{r['rank']}", r["host"], r["container"] or "",
            r["state"], "" if r["exit_code"] is None else str(r["exit_code"]))))
    Console().table(table)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--job", "-f", "job", help="Job file, to find hosts when runs/ has no record of the run.")
def down(run_id: Optional[str], job: Optional[str]) -> None:
    """Stop and remove a run's containers on every host (found by label); keep their logs. Idempotent."""
    from .hosts import Hosts, gather_run, remove_run_containers, remove_secret_files

    rid, spec, rd = _run_context(run_id, job)
    console = Console()
    if spec.runtime != "docker":
        console.info("runtime: process runs end with their controller; nothing to remove")
        return
    hosts = Hosts.connect_all(spec)
    try:
        removed = remove_run_containers(hosts, rid, spec.faults.stop_grace, rd)
        try:
            gather_run(hosts, rid, rd)
        except OrchestrateError as err:
            console.warn(f"metrics not gathered: {err}")
        remove_secret_files(hosts, rid)
    finally:
        hosts.close()
    if rd.exists():
        rec = rd.load()
        if rec.get("status") in ("running", "starting", "unknown"):
            rec["status"] = "stopped"
            rd.save(rec)
    total = sum(len(v) for v in removed.values())
    for h, names in removed.items():
        for name in names:
            console.print(f"removed {name} on {h}")
    console.info(f"run {rid}: {total} container(s) removed" if total else f"run {rid}: nothing left on any host")


@cli.command()
@click.argument("run_id", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep streaming while the run is up.")
@click.option("--node", "-n", "node", type=int, help="Only this node (rank).")
def logs(run_id: Optional[str], follow: bool, node: Optional[int]) -> None:
    """Every node's output of a run (default: the latest), from runs/ or live from the hosts."""
    from .runs import resolve_run

    from .spec import JobSpec

    rd = resolve_run(run_id)
    rec = rd.load()
    _install_masker(JobSpec.model_validate(rec["job"]["spec"]))
    nodes = [n for n in rec.get("nodes", []) if node is None or n["rank"] == node]
    if node is not None and not nodes:
        raise UsageError(f"run {rd.run_id} has no node {node} (it has {len(rec.get('nodes', []))} nodes)")
    live = rec.get("status") in ("running", "unknown")
    if live and rec["job"]["spec"].get("runtime", "docker") == "docker":
        if _logs_live(rd, rec, nodes, follow):
            return
    for n in nodes:
        path = rd.path / n["log"]
        prefix = f"[node{n['rank']} {n['host']}] "
        if not path.exists():
            click.echo(f"{prefix}(no log gathered)")
            continue
        with open(path, errors="replace") as f:
            for line in f:
                click.echo(prefix + Masker.current().mask(line.rstrip("\n")))


def _logs_live(rd, rec, nodes, follow: bool) -> bool:
    import docker

    from .hosts import Hosts
    from .spec import JobSpec

    spec = JobSpec.model_validate(rec["job"]["spec"])
    hosts = Hosts.connect_all(spec)
    console = Console()
    try:
        threads = []
        found = False
        for n in nodes:
            client = hosts.docker(n["host"], streaming=True)
            try:
                c = client.containers.get(n["container"])
            except docker.errors.NotFound:
                continue
            found = True
            prefix = f"[node{n['rank']} {n['host']}] "

            def pump(c=c, prefix=prefix):
                pending = b""
                for chunk in c.logs(stream=True, follow=follow):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        console.node_line(prefix, line.decode(errors="replace"))
                if pending:
                    console.node_line(prefix, pending.decode(errors="replace"))

            th = threading.Thread(target=pump, daemon=True)
            th.start()
            threads.append(th)
        for th in threads:
            while th.is_alive():
                th.join(0.5)
        return found
    finally:
        hosts.close()


@cli.group()
def image() -> None:
    """Image tarballs: make one that `image.tarball` can name."""


@image.command("save")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FILE.tar.gz (or .tar)")
def image_save(name: str, output: str) -> None:
    """Save image NAME from the local daemon (DOCKER_HOST) to a gzip tarball, with its sha256 beside it."""
    from .images import save_image

    digest, image_id, size = save_image(name, output)
    click.echo(f"{output}: {size / 1e6:.1f} MB, image {image_id}")
    click.echo(f"sha256 {digest} (written to {output}.sha256; put it in the job as image.sha256)")


@cli.command()
@click.argument("run_id", required=False)
@click.option("--job", "-f", "job", help="Job file, to find hosts when runs/ has no record of the run.")
def gather(run_id: Optional[str], job: Optional[str]) -> None:
    """Bring every node's metrics files back to runs/<id>/metrics/ (done by `up` and `down` too)."""
    from .hosts import Hosts, gather_run

    rid, spec, rd = _run_context(run_id, job)
    if spec.runtime != "docker":
        raise UsageError("runtime: process runs gather their metrics when they end")
    hosts = Hosts.connect_all(spec)
    try:
        counts = gather_run(hosts, rid, rd)
    finally:
        hosts.close()
    for h, n in counts.items():
        click.echo(f"{h}: {n} metrics file(s) -> {rd.path / 'metrics'}")


def _register_optional() -> None:
    """Commands that live in their own modules (report, runs, compare)."""
    try:
        from . import cli_report
    except ImportError:  # pragma: no cover - the module is part of the package
        return
    for name in ("report", "runs", "compare"):
        cmd = getattr(cli_report, name, None)
        if isinstance(cmd, click.Command):
            cli.add_command(cmd, name)


_register_optional()


def main(argv: Optional[list[str]] = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="orchestrate", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except OrchestrateError as err:
        if DEBUG:
            raise
        Console().error(str(err))
        if err.hint:
            click.echo(f"hint: {Masker.current().mask(err.hint)}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(2 if err.exit_code == 2 else err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
