"""Guided decoding's ImageNet tags: the class names and the encoder's classifier, which caption words name
each class, the policy that turns tags into constraints on a caption, and guided captions for a loaded run."""
