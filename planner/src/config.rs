//! Reading a Hugging Face config.json into a ModelShape.
