"""Demo and test media: synthetic face videos and data sets, and the steps of make demo.
Nothing in the product imports this package."""
