"""Evidence: redacted snapshots and clips around chosen events, on the sensor's terms.

Off unless a sensor's config says otherwise (`evidence.policy: none`, the default, keeps no
pixel at all). With `redacted` or `full`, `recorder.Recorder` keeps a bounded pre-event buffer
of encoded frames (`buffer.py`), makes a snapshot and a clip around each chosen event (or a
time range the hub asks for), redacts them before they leave the frame loop's hands
(`redact.py`: person boxes pixelated or faces blurred, fixed regions blacked out always),
encodes them (`encode.py`: JPEG, H.264 in MP4 through PyAV) and commits them to a durable
spool (`spool.py`) that `upload.py` empties into the hub, authenticated as the device.
"""
