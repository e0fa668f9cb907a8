"""mrm-ray: multimodal reward models (Qwen2.5-VL + MLP head) trained and served on Ray.

Importing the package is cheap: `RewardModel` and friends load torch/transformers only
when first touched.
"""

from mrm_ray.config import HeadConfig, LossConfig, ModelConfig

__all__ = ["HeadConfig", "LossConfig", "ModelConfig", "RewardModel", "bradley_terry_loss"]


def __getattr__(name: str):
    if name == "RewardModel":
        from mrm_ray.model.reward_model import RewardModel

        return RewardModel
    if name == "bradley_terry_loss":
        from mrm_ray.model.loss import bradley_terry_loss

        return bradley_terry_loss
    raise AttributeError(f"module 'mrm_ray' has no attribute {name!r}")
