"""The rank stage of a capture: score the libraries' models as starts and choose one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional, Sequence

from ampxfer_lib.capture.record import DATA, RANKING, _finite, _first_difference
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import atomic_write_json


class RankStage:
    """The rank stage of :class:`ampxfer_lib.capture.pipeline.Capture` (a mixin: it uses the
    capture's folder, log and stage record)."""

    def rank(self) -> List[dict]:
        """Score every library model as a start for this device; returns the ranking, best first."""
        from ampxfer_lib.library.index import find_models
        from ampxfer_lib.transfer.rank import rank_library

        if self._ranking is not None:
            return self._ranking
        self.prepare()
        settings = {"libraries": [str(p) for p in self.libraries], "rank": self.rank_config.to_dict()}
        settings = json.loads(json.dumps(settings))  # tuples as lists, as read back from the record
        if self.done("rank") and (self.out / RANKING).exists():
            old = self.stage("rank")
            diff = _first_difference(old.get("settings", {}), settings)
            if diff:
                raise ConfigError(f"{self.out}: the starting models were ranked already with other settings ({diff}); "
                                  "rerun with the same --library folders, or choose another --out")
            self._ranking = json.loads((self.out / RANKING).read_text())["ranking"]
            self._done_before("rank", self._rank_line(self._ranking))
            return self._ranking
        present = [p for p in self.libraries if p.exists() or os.path.realpath(p) not in self.optional_libraries]
        found = find_models(present, log=lambda m: self.log(f"  {m}"))
        where = ", ".join(str(p) for p in self.libraries)
        if not found:
            self._say("rank", f"no starting models in {where}: the capture trains from scratch")
            ranking: List[dict] = []
        else:
            self._say("rank", f"scoring {len(found)} model(s) from {where}")
            by_path = {str(m.path): m for m in found}
            ranking = rank_library([m.path for m in found], self.out / DATA, self.rank_config, progress=False,
                                   log=lambda m: self.log(f"  {m}"))
            for e in ranking:
                e.pop("head", None)  # the least-squares head: 21 numbers nobody reads
                m = by_path.get(e["model"])
                if m is not None:
                    e["name"], e["library"] = m.name, str(m.library)
                    e["licence"] = m.entry.licence if m.entry else ""
            for e in ranking[:5]:
                if e["score"] is not None:
                    self.log(f"  {e['rank']:>2}. {e['name']:<28} score {e['score']:.4g} ({e['scored_by']})")
            skipped = [e for e in ranking if e["score"] is None]
            if skipped:
                self.log(f"  {len(skipped)} model(s) could not start this capture, e.g. "
                         f"{skipped[0].get('name', skipped[0]['model'])}: {skipped[0].get('skipped', 'no score')}")
        ranking = _finite(ranking)
        atomic_write_json(self.out / RANKING, {"settings": settings, "models": len(found), "ranking": ranking})
        self._ranking = ranking
        self._finish("rank", {"settings": settings, "models": len(found),
                              "ranked": sum(e["score"] is not None for e in ranking)})
        self._say("rank", self._rank_line(ranking))
        return ranking

    @staticmethod
    def _rank_line(ranking: Sequence[dict]) -> str:
        ranked = [e for e in ranking if e["score"] is not None]
        if not ranked:
            return "no usable starting model"
        best = ranked[0]
        return f"best start {best.get('name', Path(best['model']).stem)} (score {best['score']:.4g}, {best['scored_by']})"

    def choose_start(self) -> Optional[dict]:
        """The starting model as a ranking-like entry plus ``chosen_by``; None: from scratch.
        Ranks first when ``start`` needs the ranking (the notebooks show it before training)."""
        start = self.start
        if isinstance(start, str) and start.strip().lower() == "scratch":
            return None
        if start is None or (isinstance(start, str) and start.strip().lower() == "auto"):
            ranked = [e for e in self.rank() if e["score"] is not None]
            return dict(ranked[0], chosen_by="ranking") if ranked else None
        if isinstance(start, int) or (isinstance(start, str) and start.strip().isdigit()):
            k = int(start)
            ranked = [e for e in self.rank() if e["score"] is not None]
            if not 1 <= k <= len(ranked):
                raise ConfigError(f"--start {k}: the ranking has {len(ranked)} usable model(s); give 1..{len(ranked)}, "
                                  "auto, scratch or a model file")
            return dict(ranked[k - 1], chosen_by=f"you (rank {k})")
        path = Path(start)
        if not path.is_file():
            raise ConfigError(f"--start {start}: no such model file; give auto, scratch, a rank or a model .json")
        entry = {"model": os.path.abspath(path), "name": path.stem, "knobs": [], "chosen_by": "you"}
        if self.done("rank"):  # its score, if the ranking saw it
            for e in self.rank():
                if os.path.realpath(e["model"]) == os.path.realpath(path) and e["score"] is not None:
                    entry = dict(e, knobs=e["knobs"], chosen_by="you")
                    break
        return entry
