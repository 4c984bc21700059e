"""Text-aware personalized recommendation with a two-tower model.

    from niche.apps.recommend import Recommender
    from niche.apps.recommend.data import load

Modules: :mod:`.recommender` (:class:`Recommender`: fit, rank, add items, save, load),
:mod:`.model` (the towers, the item encoder, :class:`RecommendConfig`), :mod:`.data` (reading
and splitting interactions), :mod:`.metrics` (ranking metrics and the baselines),
:mod:`.evaluation` (the evaluation protocol). ``niche serve`` serves a recommender directory
through :mod:`niche.serving.recommend`.
"""

from .data import DataReport, Interactions
from .evaluation import evaluate
from .model import RecommendConfig
from .recommender import KIND, Recommender, is_recommender_dir

__all__ = ["KIND", "DataReport", "Interactions", "RecommendConfig", "Recommender", "evaluate", "is_recommender_dir"]
