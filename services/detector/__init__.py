"""The detector service: TFLite object detection on camera frames, published as MQTT events."""
