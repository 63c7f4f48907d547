"""Look inside a model: attention capture and statistics, block features and CKA, masking statistics."""
