"""What train.py runs beyond a plain fit: the epoch bookkeeping every phase shares, history.csv,
self-critical training and its reward, encoder fine-tuning, and training across devices."""
