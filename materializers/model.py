"""A trained model as safetensors weights plus a JSON description; loaded without unpickling anything."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from components.models.trained import TrainedModel


class TrainedModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (TrainedModel,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: TrainedModel) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in data.state_dict.items()}
        with self.artifact_store.open(os.path.join(self.uri, "weights.safetensors"), "wb") as f:
            f.write(st_save(state))
        meta = {k: getattr(data, k) for k in
                ("architecture", "config", "train_config", "history", "best_epoch", "best_metric", "info")}
        with self.artifact_store.open(os.path.join(self.uri, "model.json"), "w") as f:
            json.dump(meta, f, indent=1, default=str)

    def load(self, data_type: type[Any]) -> TrainedModel:
        with self.artifact_store.open(os.path.join(self.uri, "weights.safetensors"), "rb") as f:
            state = st_load(f.read())
        with self.artifact_store.open(os.path.join(self.uri, "model.json"), "r") as f:
            meta = json.load(f)
        return TrainedModel(state_dict=state, **meta)

    def extract_metadata(self, data: TrainedModel) -> dict[str, Any]:
        return {"architecture": data.architecture, "parameters": data.n_parameters, "best_epoch": data.best_epoch}
