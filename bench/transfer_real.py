"""The transfer-learning study on real material: real DI, real-gear captures as devices.

    python bench/transfer_real.py [--out out/bench/transfer_real] [--max-epochs N | --epochs-full N
                                  --epochs-limited M] [--seeds 0 1] [--executor ray] [--smoke]

Devices are real captures played over the real DI (``bench/realdata_targets.py``: the eight
clips joined, 48 kHz resampled to 44.1 kHz, 173 s; 40 s validation, 20 s test, so ``full``
is 115 s of training audio and ``limited`` 30 s):

* pedal pair: source TS9_FullD (NeuralPi) -> target BossMetalZoneMt2_highGain (tone library)
* amp pair:   source BluesJR_FullD (NeuralPi) -> target HT40_Overdrive at drive 0.25 (the
  article's HT40 at 25 % drive)

Both arms use the ``agam`` preset (the article's recipe) with the same budget; the source
models are the capture files themselves. Prints the Table 1 figures (also in
``OUT/table1.md``) and skips with a message when ../shared/realdata is absent. Runs are
resumable: rerun the same command after an interruption, or with a larger budget to extend.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata_targets import REPO, device_data, require_realdata  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "transfer_real"))
    p.add_argument("--max-epochs", type=int, default=None, help="one budget for both data sizes")
    p.add_argument("--epochs-full", type=int, default=60)
    p.add_argument("--epochs-limited", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--preset", default="agam")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from ampxfer_lib.study.config import StudyConfig
    from ampxfer_lib.study.executors import make_executor
    from ampxfer_lib.study.run import run_study

    real = require_realdata()
    npi, lib = real / "models" / "neuralpi", real / "models" / "tonelibrary_h20"
    mt2 = device_data(real, lib / "BossMetalZoneMt2_highGain.json")
    ht40 = device_data(real, npi / "HT40_Overdrive.json", [0.25])
    budget = args.max_epochs or {"full": args.epochs_full, "limited": args.epochs_limited}
    config = StudyConfig.from_dict({
        "name": "transfer_real", "preset": args.preset, "seeds": args.seeds, "threads": args.threads,
        "max_epochs": budget, "smoke_epochs": 2,
        "pairs": [
            {"name": "pedal_ts9_to_mt2", "source": {"model": str(npi / "TS9_FullD.json")},
             "target": {"data": str(mt2), "name": "mt2_real"}},
            {"name": "amp_bluesjr_to_ht40", "source": {"model": str(npi / "BluesJR_FullD.json")},
             "target": {"data": str(ht40), "name": "ht40_d025_real"}},
        ]})
    out = Path(args.out)
    outcome = run_study(config, out, make_executor(args.executor, args.address), smoke=args.smoke)
    print()
    print(f"command: python bench/transfer_real.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(outcome.table1.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
