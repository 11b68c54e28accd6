"""Evaluation: frame- and video-level metrics, the threshold grid search and ROC plots (scikit-learn, matplotlib).
Imported by the trainers; never on the app's default path."""
