"""Evaluation: metrics, the threshold grid search, ROC plots and reports, MRI-GAN scores and comparisons (scikit-learn,
matplotlib). Imported by the trainers; never on the app's default path."""
