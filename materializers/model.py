"""A trained model as safetensors weights plus a JSON description; loaded without unpickling anything."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from components.models.trained import META_FILE, WEIGHTS_FILE, TrainedModel


class TrainedModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (TrainedModel,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: TrainedModel) -> None:
        weights, meta = data.to_bytes()
        with self.artifact_store.open(os.path.join(self.uri, WEIGHTS_FILE), "wb") as f:
            f.write(weights)
        with self.artifact_store.open(os.path.join(self.uri, META_FILE), "w") as f:
            f.write(meta)

    def load(self, data_type: type[Any]) -> TrainedModel:
        with self.artifact_store.open(os.path.join(self.uri, WEIGHTS_FILE), "rb") as f:
            weights = f.read()
        with self.artifact_store.open(os.path.join(self.uri, META_FILE), "r") as f:
            return TrainedModel.from_bytes(weights, f.read())

    def extract_metadata(self, data: TrainedModel) -> dict[str, Any]:
        return {"architecture": data.architecture, "method": data.method or "none", "parameters": data.n_parameters, "best_epoch": data.best_epoch}
