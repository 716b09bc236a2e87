# Document and Chunk arrive with the RAG issue.
