"""The Keras model library: names, heads, config, model, training, export and `recommend`. Imports no TFX."""
