"""Temporary: the old name of utils/infer/classifier_weights.py, for utils/train/classifier.py only.
Delete this file once that import names classifier_weights (at the merge of issue 22's branches)."""
from utils.infer.classifier_weights import build_classifier, classifier_from_checkpoint  # noqa: F401
