"""Training: processes, loaders, RNG, precision, the Trainer and run sequence, the MRI-GAN and classifier trainers,
their data sets and the classifier's test. Never imports preprocessing code."""
