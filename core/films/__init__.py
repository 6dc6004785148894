"""Films: PNG/JPEG/DICOM bytes -> one Film; is it a usable chest film; its reference form; Film -> model
input (the one preprocessing path); class-folder trees of films."""
