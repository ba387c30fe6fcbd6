"""Reference rows a run is judged against: ``baselines/*.yaml`` files or an earlier run.

A baseline file (every field is documented in docs/report.md)::

    env: {zh: 2机16卡, en: 2 hosts x 8 cards}   # or one string; derived from hosts x devices when absent
    hosts: 2
    devices_per_host: 8
    device: V100
    model: seresnet50
    precision: null        # unknown -> not compared
    global_batch: null
    top1: 1.0              # a fraction 0..1, like the trainer's metrics
    top5: null
    img_s: 5788            # null -> the ratio column shows n/a
    source: where the numbers come from (document, URL, run id)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ReportError, UsageError
from .runs import RUN_ID_RE, RunDir, resolve_run

BASELINES_DIRNAME = "baselines"


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""  # filled from the file stem or the run id
    env: Optional[Union[str, dict[str, str]]] = None
    hosts: Optional[int] = Field(default=None, ge=1)
    devices_per_host: Optional[int] = Field(default=None, ge=1)
    device: Optional[str] = None
    model: str
    precision: Optional[str] = None
    global_batch: Optional[int] = Field(default=None, ge=1)
    top1: Optional[float] = None
    top5: Optional[float] = None
    img_s: Optional[float] = Field(default=None, gt=0)
    image_size: Optional[int] = None
    source: str

    @field_validator("top1", "top5")
    @classmethod
    def _fraction(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not (0.0 < v <= 1.0):
            raise ValueError(f"must be a fraction in (0, 1] like the trainer's metrics (80.26% -> 0.8026), got {v}")
        return v

    def env_label(self, lang: str) -> str:
        if isinstance(self.env, str):
            return self.env
        if isinstance(self.env, dict) and self.env:
            return self.env.get(lang) or next(iter(self.env.values()))
        if self.hosts and self.devices_per_host:
            return env_label(self.hosts, self.hosts * self.devices_per_host, (self.device or "").lower(), lang)
        return "n/a"

    def as_dict(self) -> dict[str, Any]:
        d = self.model_dump()
        d["env"] = {"zh": self.env_label("zh"), "en": self.env_label("en")}
        return d


def env_label(nnodes: int, device_count: int, device_kind: str, lang: str) -> str:
    """The seed's environment label: 2机16卡 / 2 hosts x 8 cards (processes on a CPU run)."""
    per = device_count // nnodes if nnodes else device_count
    cpu = device_kind == "cpu"
    if lang == "zh":
        return f"{nnodes}机{device_count}进程(CPU)" if cpu else f"{nnodes}机{device_count}卡"
    host_word = "host" if nnodes == 1 else "hosts"
    unit = "procs (cpu)" if cpu else ("card" if per == 1 else "cards")
    return f"{nnodes} {host_word} x {per} {unit}"


def _field_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if e["type"] == "missing":
            parts.append(f"missing field '{loc}'")
        elif e["type"] == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        else:
            parts.append(f"'{loc}': {e['msg']}")
    return "; ".join(parts)


def load_baseline_file(path: Path) -> Baseline:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ReportError(f"baseline {path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ReportError(f"baseline {path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ReportError(f"baseline {path}: expected a mapping of fields, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    try:
        return Baseline.model_validate(data)
    except ValidationError as err:
        raise ReportError(f"baseline {path}: {_field_errors(err)}",
                          hint="see docs/report.md for the baseline fields") from None


def baseline_from_run(rd: RunDir) -> Baseline:
    """An earlier run as the reference: its rank-0 summary (or last epoch) and run.json."""
    from .report_metrics import load_headline  # report_metrics -> runs only; lazy keeps import order simple

    head = load_headline(rd)
    if head["model"] is None:
        raise ReportError(f"baseline run {rd.run_id} has no metrics: it failed before training "
                          f"(see orchestrate logs {rd.run_id})")
    return Baseline(
        name=rd.run_id,
        env={lang: env_label(head["nnodes"], head["device_count"], head["device_kind"] or "", lang)
             for lang in ("zh", "en")},
        hosts=head["nnodes"] or None,
        devices_per_host=(head["device_count"] // head["nnodes"]) if head["nnodes"] else None,
        device=device_name(head["device_kind"]),
        model=head["model"],
        precision=head["precision"],
        global_batch=head["global_batch"],
        top1=head["top1"] if head["top1"] else None,
        top5=head["top5"] if head["top5"] else None,
        img_s=head["img_s"] or None,
        source=f"run {rd.run_id}",
    )


def device_name(kind: Optional[str]) -> Optional[str]:
    if kind is None:
        return None
    return {"cpu": "CPU", "cuda": "CUDA", "mlu": "MLU", "dcu": "DCU"}.get(kind.lower(), kind)


def search_dirs() -> list[Path]:
    """``./baselines`` then the repository's own ``baselines/`` (a source checkout)."""
    dirs = [Path(BASELINES_DIRNAME), Path(__file__).resolve().parent.parent / BASELINES_DIRNAME]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def resolve_baseline(ref: str, runs_root: Optional[Path] = None) -> Baseline:
    """FILE, ``runs/<id>`` (any path to a run folder), a run id, or a name under baselines/."""
    path = Path(ref)
    if path.is_file():
        return load_baseline_file(path)
    if path.is_dir() and (path / "run.json").is_file():
        return baseline_from_run(RunDir(path.parent, path.name))
    if RUN_ID_RE.match(path.name) and (RUN_ID_RE.match(ref) or path.parent.name == "runs"):
        root = runs_root if RUN_ID_RE.match(ref) else None
        return baseline_from_run(resolve_run(path.name, root))
    if path.suffix == "" and "/" not in ref:
        for d in search_dirs():
            for cand in (d / f"{ref}.yaml", d / f"{ref}.yml"):
                if cand.is_file():
                    return load_baseline_file(cand)
    raise UsageError(f"baseline {ref!r}: no such file, run folder or run id",
                     hint="pass baselines/<name>.yaml, runs/<id> or a run id (see `orchestrate runs`)")
