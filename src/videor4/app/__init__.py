"""What users run: the `video-r4` command line (cli), `ask` on any video, and the reports (render)."""
