"""Media: video decoding and writing, face detection and crops, MRI maths, images and picture grids, augmentation
operations. Imports only the core modules of utils/."""
