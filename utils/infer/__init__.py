"""Inference: loading and exporting trained models, predicting MRIs, the video rule and the app's engine (Detector).
Imports core, media and models only: no training, preprocessing or demo code, no scikit-learn, no matplotlib."""
