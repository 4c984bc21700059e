"""Batch prediction over files: in this process (:func:`predict_file`) or on a Ray cluster
(:func:`predict_file_ray`, ``pip install 'niche[ray]'``). Both write the same rows in the input order
and resume a killed run with no duplicated or missing rows."""

from .files import predict_file
from .ray import predict_file_ray

__all__ = ["predict_file", "predict_file_ray"]
