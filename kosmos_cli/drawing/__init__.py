"""Boxes and labels onto images, and an HTML gallery of them. Pillow only: `kosmos draw` never imports torch.

colors.py      the palette; black or white text on a colour (WCAG contrast)
render.py      a row's shapes (its task says what they are); boxes and labels onto an image
naming.py      where each annotated image comes from and goes to; writing it safely
gallery.py     index.html, each row's text highlighted in its boxes' colours (its task says how)
drawer.py      Drawer: a result at a time, counted in a DrawSummary
background.py  Background: a Drawer fed from the main thread, drawing on threads of its own; `run`: kosmos draw

Results files are read through `reader.read` (the reader draw, export and view share), never here.
"""

from .background import Background, run
from .colors import PALETTE, color, luminance, text_color
from .drawer import Drawer, DrawSummary
from .gallery import Gallery, caption_html
from .naming import Targets, input_root
from .render import Shape, annotate, font_size, label_box, line_width, shapes_of

__all__ = [
    "PALETTE",
    "Background",
    "DrawSummary",
    "Drawer",
    "Gallery",
    "Shape",
    "Targets",
    "annotate",
    "caption_html",
    "color",
    "font_size",
    "input_root",
    "label_box",
    "line_width",
    "luminance",
    "run",
    "shapes_of",
    "text_color",
]
