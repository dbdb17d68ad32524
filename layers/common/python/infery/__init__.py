"""infery: the speech-to-text domain shared by every Lambda function (deployed as a layer)."""
