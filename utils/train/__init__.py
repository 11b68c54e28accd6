"""Training: the shared loop and run sequence, the MRI-GAN and classifier trainers and their data sets.
Never imports preprocessing code."""
