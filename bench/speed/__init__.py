"""Speed and memory: per stage, end to end against face_recognition, actor layouts, listing and
scale through a Ray cluster."""
