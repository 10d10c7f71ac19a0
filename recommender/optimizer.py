"""Adam that updates only the embedding rows a batch uses.

tf_keras's Adam, given a sparse (IndexedSlices) gradient, still decays the
moments of every row and rewrites the whole variable on every step, so a step
on an embedding table costs O(rows in the table) and an epoch
O(examples x vocabulary).

`LazyAdam` applies Adam's update to the rows in the gradient only (the
"lazy" Adam of TF-Addons and PyTorch's SparseAdam): a row's moments decay
only on the steps that use it. Dense gradients get exactly Keras's Adam.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


@tf_keras.saving.register_keras_serializable(package="recommender")
class LazyAdam(tf_keras.optimizers.Adam):
    """Keras Adam, with row-sparse updates for IndexedSlices gradients (no AMSGrad)."""

    def __init__(self, learning_rate=0.001, **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("LazyAdam does not implement amsgrad")
        super().__init__(learning_rate=learning_rate, **kwargs)

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        # Keras has already summed the gradients of repeated indices.
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon

        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        rows, grad = gradient.indices, gradient.values
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(grad)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))
