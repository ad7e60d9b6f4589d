"""Cleaned interactions (Parquet + id maps) and the split sequence dataset (npz + JSON, no pickle)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from components.data.clean import CleanResult
from components.data.sequences import SequenceDataset
from materializers._io import download_dir, upload_dir


class CleanResultMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (CleanResult,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def _write(self, name: str, table: pa.Table) -> None:
        with self.artifact_store.open(os.path.join(self.uri, name), "wb") as f:
            pq.write_table(table, f, compression="zstd")

    def _read(self, name: str) -> pa.Table:
        with self.artifact_store.open(os.path.join(self.uri, name), "rb") as f:
            return pq.read_table(io.BytesIO(f.read()))

    def save(self, data: CleanResult) -> None:
        self._write("interactions.parquet", data.interactions)
        self._write("user_ids.parquet", pa.table({"original_id": data.user_ids}))
        self._write("item_ids.parquet", pa.table({"original_id": data.item_ids}))
        with self.artifact_store.open(os.path.join(self.uri, "report.json"), "w") as f:
            json.dump(data.report, f, indent=1)

    def load(self, data_type: type[Any]) -> CleanResult:
        with self.artifact_store.open(os.path.join(self.uri, "report.json"), "r") as f:
            report = json.load(f)
        return CleanResult(
            interactions=self._read("interactions.parquet"),
            user_ids=self._read("user_ids.parquet").column("original_id").combine_chunks(),
            item_ids=self._read("item_ids.parquet").column("original_id").combine_chunks(),
            report=report,
        )

    def save_visualizations(self, data: CleanResult) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "cleaning.md")
        lines = ["| rule | rows before | rows after | dropped |", "|---|---:|---:|---:|"]
        lines += [f"| {s['rule']} | {s['rows_before']:,} | {s['rows_after']:,} | {s['dropped']:,} |"
                  for s in data.report.get("steps", [])]
        lines += ["", f"{data.report.get('n_users', 0):,} users, {data.report.get('n_items', 0):,} items, "
                      f"{data.interactions.num_rows:,} events; behaviors {data.report.get('behavior_counts')}"]
        with self.artifact_store.open(path, "w") as f:
            f.write("\n".join(lines))
        return {path: VisualizationType.MARKDOWN}

    def extract_metadata(self, data: CleanResult) -> dict[str, Any]:
        return {"rows": data.interactions.num_rows, "users": len(data.user_ids), "items": len(data.item_ids)}


class SequenceDatasetMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (SequenceDataset,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def save(self, data: SequenceDataset) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data.save(tmp)
            upload_dir(self.artifact_store, Path(tmp), self.uri)

    def load(self, data_type: type[Any]) -> SequenceDataset:
        with tempfile.TemporaryDirectory() as tmp:
            download_dir(self.artifact_store, self.uri, Path(tmp))
            return SequenceDataset.load(tmp)

    def save_visualizations(self, data: SequenceDataset) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "split.md")
        m = data.meta
        lines = [
            f"**{data.n_users:,} users, {data.n_items:,} items, {len(data.items):,} events**; behaviors "
            f"{data.behavior_names}, targets {m.get('target_behaviors')}", "",
            f"cold users: **{m.get('cold_mode')}** (threshold {m.get('cold_threshold')} target events)", "",
            "| group | users |", "|---|---:|",
            f"| warm (pre-training) | {m.get('n_warm_users'):,} |",
            f"| cold, tuning | {m.get('n_cold_tune_users'):,} |",
            f"| cold, test | {m.get('n_cold_test_users'):,} |",
            f"| without any target event (left out) | {m.get('n_users_without_target'):,} |", "",
            f"| target set | instances | negatives each |", "|---|---:|---:|",
        ]
        lines += [f"| {k} | {len(v):,} | {v.negatives.shape[1]} |" for k, v in data.targets.items()]
        with self.artifact_store.open(path, "w") as f:
            f.write("\n".join(lines))
        return {path: VisualizationType.MARKDOWN}

    def extract_metadata(self, data: SequenceDataset) -> dict[str, Any]:
        return {"users": data.n_users, "items": data.n_items, "events": int(len(data.items)),
                "cold_mode": str(data.meta.get("cold_mode")), "n_negatives": int(data.meta.get("n_negatives", 0))}
