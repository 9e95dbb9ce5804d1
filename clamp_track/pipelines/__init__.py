"""Video to tracked, smoothed poses: readers, detectors, tracker, pose stage, smoother.

Never imports Qt; the GUI calls these functions from worker threads.
"""
