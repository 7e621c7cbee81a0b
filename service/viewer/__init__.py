"""What a person looks at: the overlay PNG, the AHA bull's-eye, the HTML pages and
their templates (web/).

May import: itself, ``service.dicom`` (the segment colours), ``service.errors``;
it renders reports and arrays it is given, and reads no store.
"""
