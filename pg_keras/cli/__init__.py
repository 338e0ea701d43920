"""The installed commands: pg-keras-train, pg-keras-export and pg-keras-evaluate.

Each command module keeps absl at its edge and imports TensorFlow only after its flags are
parsed and checked.
"""
