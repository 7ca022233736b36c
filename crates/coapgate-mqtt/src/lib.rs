//! coapgate-mqtt (skeleton).
