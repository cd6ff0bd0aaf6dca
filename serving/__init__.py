"""A trained run or package, ready to caption photos (predict, evaluate, the page, export), and the
image decoding exported models carry in their graph."""
