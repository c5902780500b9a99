"""ALIGN model code: keras.ops and keras.layers only, so it runs under any Keras backend."""
