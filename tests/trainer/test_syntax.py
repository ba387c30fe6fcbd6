"""The trainer must run in the vendor MLU image: Python 3.10, torch 1.13."""
import ast
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[2] / "trainer"


def trainer_files():
    files = sorted(TRAINER.glob("*.py"))
    assert files, TRAINER
    return files


def test_every_trainer_file_parses_as_python_3_10():
    for path in trainer_files():
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_torch_mlu_is_never_imported_at_module_level():
    """An `import torch_mlu` statement anywhere would load it for --device cuda/cpu too;
    devices.SystemProbe imports it through importlib only for --device mlu|auto."""
    for path in trainer_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "torch_mlu" for n in names), (path, node.lineno)
