"""Tiny Keras backbones on 8x8x1 digits, shared by the selection tests.

Module-level functions, so that Dask can pickle them (the tests register this
module for pickling by value) and a driver script can import them.
"""


def tiny_cnn():
    import keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Flatten()(h))


def tiny_mlp():
    import keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Dense(12, activation="tanh")(keras.layers.Flatten()(inp))
    return keras.Model(inp, h)


def wide_mlp():
    import keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Dense(24, activation="relu")(keras.layers.Flatten()(inp))
    return keras.Model(inp, h)
