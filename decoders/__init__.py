"""Turning image features into words: the attention decoder's layers, and the searches (greedy, beam,
sampled) that every decoder and ensemble shares."""
