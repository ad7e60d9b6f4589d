"""Validation and evaluation reports: JSON to load back, Markdown/HTML/PNG to look at in the dashboard."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from components.data.validation import ValidationReport
from components.metrics.report import EvaluationReport


class ValidationReportMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (ValidationReport,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA_ANALYSIS

    def save(self, data: ValidationReport) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "validation.json"), "w") as f:
            json.dump(data.to_json(), f, indent=1, default=str)

    def load(self, data_type: type[Any]) -> ValidationReport:
        with self.artifact_store.open(os.path.join(self.uri, "validation.json"), "r") as f:
            return ValidationReport.from_json(json.load(f))

    def save_visualizations(self, data: ValidationReport) -> dict[str, VisualizationType]:
        html, md = os.path.join(self.uri, "validation.html"), os.path.join(self.uri, "validation.md")
        with self.artifact_store.open(html, "w") as f:
            f.write(data.to_html())
        with self.artifact_store.open(md, "w") as f:
            f.write(data.to_markdown())
        return {html: VisualizationType.HTML, md: VisualizationType.MARKDOWN}

    def extract_metadata(self, data: ValidationReport) -> dict[str, Any]:
        return {"success": data.success, "expectations": len(data.results),
                "failed": sum(1 for r in data.results if not r["success"])}


class EvaluationReportMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (EvaluationReport,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA_ANALYSIS

    def save(self, data: EvaluationReport) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "evaluation.json"), "w") as f:
            json.dump(data.to_json(), f, indent=1)
        if data.curves_png:
            with self.artifact_store.open(os.path.join(self.uri, "training_curves.png"), "wb") as f:
                f.write(data.curves_png)

    def load(self, data_type: type[Any]) -> EvaluationReport:
        with self.artifact_store.open(os.path.join(self.uri, "evaluation.json"), "r") as f:
            d = json.load(f)
        png_path = os.path.join(self.uri, "training_curves.png")
        png = None
        if self.artifact_store.exists(png_path):
            with self.artifact_store.open(png_path, "rb") as f:
                png = f.read()
        return EvaluationReport.from_json(d, png)

    def save_visualizations(self, data: EvaluationReport) -> dict[str, VisualizationType]:
        md = os.path.join(self.uri, "evaluation.md")
        with self.artifact_store.open(md, "w") as f:
            f.write(data.to_markdown())
        out = {md: VisualizationType.MARKDOWN}
        if data.curves_png:
            out[os.path.join(self.uri, "training_curves.png")] = VisualizationType.IMAGE
        return out

    def extract_metadata(self, data: EvaluationReport) -> dict[str, Any]:
        flat = {f"{m}.{k}": v for m, d in data.metrics.items() for k, v in d.items() if "_at_10" in k}
        return dict(list(flat.items())[:40])
