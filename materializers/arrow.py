"""pyarrow.Table <-> Parquet, with a schema-and-head preview in the dashboard."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer


class ArrowTableMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (pa.Table,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> pa.Table:
        with self.artifact_store.open(os.path.join(self.uri, "table.parquet"), "rb") as f:
            return pq.read_table(f)

    def save(self, data: pa.Table) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "table.parquet"), "wb") as f:
            pq.write_table(data, f, compression="zstd")

    def save_visualizations(self, data: pa.Table) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "preview.md")
        head = data.slice(0, 10).to_pylist()
        cols = data.column_names
        lines = [f"**{data.num_rows:,} rows x {data.num_columns} columns**", "", "| column | type |", "|---|---|"]
        lines += [f"| {f.name} | {f.type} |" for f in data.schema]
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in head]
        with self.artifact_store.open(path, "w") as f:
            f.write("\n".join(lines))
        return {path: VisualizationType.MARKDOWN}

    def extract_metadata(self, data: pa.Table) -> dict[str, Any]:
        return {"rows": data.num_rows, "columns": data.column_names}
