"""What notebook cells call to render: result views, charts, the mitigation panel."""
