"""The viz room: every figure and widget of the project (matplotlib and ipywidgets are
imported here and nowhere else). ``style`` holds the one DPI, colour map and save helper."""
