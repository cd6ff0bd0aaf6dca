"""How captions are judged and shown: the COCO caption metrics and NLTK BLEU, training curves, reports
and attention maps."""
