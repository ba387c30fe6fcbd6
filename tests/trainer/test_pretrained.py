"""--pretrained reads a local weights file (never a hub); a classifier of another shape is
left at its fresh initialisation."""
import timm
import torch

from trainer.train import main


def test_pretrained_from_local_file(tmp_path, capsys):
    src = timm.create_model("seresnet18", num_classes=1000)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "w.pth")
    code = main([str(a) for a in [
        "--synthetic", "--model", "seresnet18", "--num-classes", 10, "--img-size", 32,
        "--batch-size", 4, "--epochs", 1, "--steps-per-epoch", 1, "--device", "cpu",
        "--pretrained", "--checkpoint", tmp_path / "w.pth", "--output-dir", tmp_path / "o"]])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "not loaded (shape differs): fc.weight, fc.bias" in out
    ckpt = torch.load(tmp_path / "o" / "checkpoint-last.pth", weights_only=False)
    # one small SGD step later, a block deep in the network still holds the file's values
    key = "layer1.0.conv1.weight"
    assert torch.allclose(ckpt["model"][key], src.state_dict()[key], atol=1e-4)
    fresh = timm.create_model("seresnet18", num_classes=10).state_dict()[key]
    assert not torch.allclose(fresh, src.state_dict()[key], atol=1e-2)
